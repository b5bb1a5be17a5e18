"""One prediction request's files, each on its own way: read (or fetched), run through what its
flags ask for (`is_yolo` → `detect`, `is_llm` → `query` with the request's query; both: one
decode for both), its result entry built, its assets stored, and its events told as they
happen (`processing` when its work starts, `done` or `error` when it ends).

At most `FILES_IN_FLIGHT` files of one request are worked on at once: model batches still form
across them (every skill submits images one by one to the engine's batchers), one request
cannot queue 50 decodes ahead of everyone else, and a stream shows progress file by file.
`stop()` cancels the files not finished (a streaming client that went away); they are not
charged, nor are files that failed before inference, nor vision-language calls that gave no
answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from batchvision.api.compat.raku import wire
from batchvision.api.compat.raku.annotate import MAX_SIDE, annotated_png
from batchvision.api.compat.raku.assets import AssetFolder
from batchvision.api.compat.raku.errors import item_error
from batchvision.core.errors import BatchVisionError, ErrorCode
from batchvision.core.types import ImageInput, ItemError, ItemResult, Task
from batchvision.intake.decode import decoding_cost
from batchvision.intake.fetch import ByteTally, fetch_url
from batchvision.pipeline import Pipeline, PreparedTask

log = logging.getLogger(__name__)

FILES_IN_FLIGHT = 8
Event = dict[str, Any]
Emit = Callable[[Event], None]


@dataclass
class RakuFile:
    """One file as the client sent it: bytes (v1) or a URL (v2), or why it cannot be read."""

    index: int
    filename: str | None
    flags: wire.FileFlags
    data: bytes | None = None
    url: str | None = None
    error: ItemError | None = None


@dataclass
class Outcome:
    entry: dict[str, Any]
    inferred: bool = False  # the image was read and went to the models: it is charged
    answered: bool = False  # the vision-language backend answered: that call is charged


Prepared = list[PreparedTask] | ItemError


def _invalid(message: str) -> ItemError:
    return ItemError(ErrorCode.INVALID_REQUEST, message)


def _failed(file: RakuFile, error: ItemError) -> Outcome:
    return Outcome(wire.result_entry(file.index, file.filename, error=item_error(error)))


def _ended(file: RakuFile, entry: dict[str, Any]) -> Event:
    """A file's last stream line: `done`, or `error` with its error (and what did run)."""
    event: Event = {"status": "done", "index": file.index, "filename": file.filename}
    if "error" in entry:
        event.update(status="error", error=entry["error"])
    event["result"] = entry
    return event


def _prepare(pipeline: Pipeline, task: Task) -> Prepared:
    """A skill ready to run, or why it cannot (no vision-language backend configured): then
    only the files asking for it fail."""
    try:
        return pipeline.prepare_tasks([task])
    except BatchVisionError as exc:
        return ItemError.from_exception(exc)


class Prediction:
    def __init__(self, pipeline: Pipeline, folder: AssetFolder | None, query: str | None) -> None:
        """`folder`: where assets go (None: not stored); `query`: the request's, if any."""
        self.pipeline = pipeline
        self.folder = folder
        self.detect = _prepare(pipeline, Task("detect"))
        self.ask = None if query is None else _prepare(pipeline, Task("query", {"question": query}))
        settings, policy = pipeline.settings, pipeline.fetch_policy
        self.fetch_policy = replace(
            policy, max_bytes=min(policy.max_bytes, settings.raku_max_file_bytes)
        )
        self.fetched = ByteTally(settings.max_fetched_bytes_per_request)
        self.slots = asyncio.Semaphore(FILES_IN_FLIGHT)
        self._tasks: list[asyncio.Task[Outcome]] = []
        self._stopped = False

    def vlm_calls(self, files: Sequence[RakuFile]) -> int:
        """The vision-language calls the files ask for (reserved up front, refunded if unmade)."""
        if not isinstance(self.ask, list):
            return 0
        return sum(1 for f in files if f.flags.is_llm and f.error is None)

    async def run(self, files: Sequence[RakuFile], emit: Emit) -> list[Outcome]:
        self._tasks = [asyncio.create_task(self._file(f, emit)) for f in files]
        if self._stopped:
            self.stop()
        done = await asyncio.gather(*self._tasks, return_exceptions=True)
        return [self._outcome(f, d) for f, d in zip(files, done, strict=True)]

    def stop(self) -> None:
        self._stopped = True
        for task in self._tasks:
            task.cancel()

    @staticmethod
    def _outcome(file: RakuFile, done: Outcome | BaseException) -> Outcome:
        """A file's outcome; one cancelled (`stop`) never ran."""
        if isinstance(done, Outcome):
            return done
        if not isinstance(done, asyncio.CancelledError):
            log.error("unexpected failure on file %d", file.index, exc_info=done)
        return _failed(file, ItemError(ErrorCode.PROCESSING_ERROR, "the file was not processed"))

    async def _file(self, file: RakuFile, emit: Emit) -> Outcome:
        async with self.slots:
            emit({"status": "processing", "index": file.index, "filename": file.filename})
            try:
                outcome = await self._predict(file)
            except Exception:  # a bug or a broken store fails this file, never its request
                log.exception("unexpected failure on file %d", file.index)
                outcome = _failed(file, ItemError(ErrorCode.PROCESSING_ERROR, "processing failed"))
        emit(_ended(file, outcome.entry))
        return outcome

    def _tasks_for(self, file: RakuFile) -> tuple[list[PreparedTask], list[ItemError]]:
        """What the file's flags ask for, and why any of it cannot run."""
        flags, tasks, errors = file.flags, [], []
        if not flags.is_yolo and not flags.is_llm:
            errors.append(_invalid("metadata asks for neither is_yolo nor is_llm"))
        for wanted, prepared in ((flags.is_yolo, self.detect), (flags.is_llm, self.ask)):
            if not wanted:
                continue
            if prepared is None:
                errors.append(_invalid("is_llm needs a query; send one with the request"))
            elif isinstance(prepared, ItemError):
                errors.append(prepared)
            else:
                tasks.extend(prepared)
        return tasks, errors

    async def _predict(self, file: RakuFile) -> Outcome:
        tasks, errors = self._tasks_for(file)
        if file.error is not None or not tasks:
            return _failed(file, file.error or errors[0])
        try:
            data = file.data if file.data is not None else await self._fetch(file)
            [result] = await self.pipeline.analyze([ImageInput(file.index, data=data)], tasks)
        except BatchVisionError as exc:
            return _failed(file, ItemError.from_exception(exc))
        return await self._finish(file, data, result, errors)

    async def _fetch(self, file: RakuFile) -> bytes:
        assert file.url is not None
        return await fetch_url(file.url, self.fetch_policy, self.fetched)

    async def _finish(
        self, file: RakuFile, data: bytes, result: ItemResult, errors: list[ItemError]
    ) -> Outcome:
        if result.image is None:
            return _failed(file, result.errors[0])
        width, height = int(result.image["width"]), int(result.image["height"])
        detect, query = result.outputs.get("detect"), result.outputs.get("query")
        yolo = wire.yolo_part(detect, width, height) if detect is not None else None
        llm = wire.llm_part(query) if query is not None else None
        problems = [*errors, *result.errors]
        error = item_error(problems[0]) if problems else None
        entry = wire.result_entry(file.index, file.filename, yolo=yolo, llm=llm, error=error)
        try:
            entry["assets"] = await self._store(file, data, entry, (width, height))
        except BatchVisionError as exc:  # a full disk: the answer still goes out, without assets
            entry.setdefault("error", item_error(ItemError.from_exception(exc)))
        return Outcome(entry, inferred=True, answered=query is not None)

    async def _store(
        self, file: RakuFile, data: bytes, entry: dict[str, Any], size: tuple[int, int]
    ) -> dict[str, Any] | None:
        """The annotated image (when detection ran) and the JSON output, in the folder."""
        if self.folder is None:
            return None
        folder = self.folder
        annotated = None
        if entry["yolo"] is not None:
            png = await self._annotate(data, entry["yolo"]["objects"], size)
            annotated = await asyncio.to_thread(folder.put, f"{file.index}-annotated.png", png)
        output = json.dumps({k: v for k, v in entry.items() if k != "assets"}).encode()
        output_path = await asyncio.to_thread(folder.put, f"{file.index}-output.json", output)
        return {"annotated_image": annotated, "output_json": output_path}

    async def _annotate(
        self, data: bytes, objects: list[dict[str, Any]], size: tuple[int, int]
    ) -> bytes:
        """The annotated PNG, its decoding paid from the server's decoded-pixel budget like
        any other decode (a second, reduced decode of the file: the pipeline has let the
        model-sized pixels go by now)."""
        engine, settings = self.pipeline.engine, self.pipeline.settings
        max_pixels = settings.max_image_pixels
        cost = await engine.run_cpu(
            decoding_cost, data, max_pixels=max_pixels, target_side=MAX_SIDE
        )
        async with engine.decoded.reserve(cost, settings.decoded_wait_s):
            png: bytes = await engine.run_cpu(annotated_png, data, objects, size, max_pixels)
            return png
