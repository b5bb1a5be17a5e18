"""`batchvision jobs`: submit, watch, list, download and cancel batch jobs on a running server.

A thin HTTP client for the native job API (api/native/jobs.py), so it works against any
batchvision server, local or remote, and needs none of the server's models or database. Files
go up through the multipart routes one part at a time, and result files come down in blocks,
so neither direction ever holds a whole file in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from batchvision.cli.exits import CliError, ExitStatus, one_line, reported
from batchvision.core.fsutil import AtomicFile

app = typer.Typer(
    help="Batch jobs on a running server: submit, status, list, download, cancel.",
    no_args_is_help=True,
)

DEFAULT_URL = "http://127.0.0.1:8080"
FINAL_STATES = frozenset({"completed", "failed", "cancelled", "expired"})
MIB = 1024 * 1024
MAX_PARTS = 10_000  # the server's (and S3's) highest part number
BLOCK = MIB  # read/write granularity while streaming a part or a result file
# Completing a large upload concatenates its parts before the server answers: allow time for it.
TIMEOUT = httpx.Timeout(120.0, connect=10.0)

Url = Annotated[
    str, typer.Option("--url", envvar="BATCHVISION_URL", help="server base URL", show_default=True)
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="BATCHVISION_API_KEY",
        help="API key, sent as a Bearer token",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print the server's JSON")]
JobId = Annotated[str, typer.Argument(help="job id")]


def _api_error(reply: httpx.Response) -> CliError:
    """The server's error body as `<code>: <message>`, with the exit status the table gives the
    code (the server speaks the same ErrorCode vocabulary)."""
    try:
        error = reply.json()["error"]
        return CliError.of_code(str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        reason = reply.reason_phrase or "unexpected reply"
        return CliError(f"http_{reply.status_code}: {reason}")


def _checked(reply: httpx.Response) -> dict[str, Any]:
    """The JSON object of a successful reply; anything else becomes a CliError."""
    if reply.is_error:
        raise _api_error(reply)
    try:
        body = reply.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise CliError(f"the server at {reply.request.url} did not answer with a JSON object")
    return body


class JobsClient:
    """The native job API over one HTTP connection pool, authenticated with the API key."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=TIMEOUT)

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return _checked(self.http.request(method, path, **kwargs))

    def job(self, job_id: str) -> dict[str, Any]:
        # Quoted so an id can never reach another route (`../`, `?`, `#`).
        return self.call("GET", f"/v1/jobs/{quote(job_id, safe='')}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.call("POST", f"/v1/jobs/{quote(job_id, safe='')}/cancel")

    def page(self, limit: int | None, cursor: str | None) -> dict[str, Any]:
        params = {k: v for k, v in (("limit", limit), ("cursor", cursor)) if v is not None}
        return self.call("GET", "/v1/jobs", params=params)

    def close(self) -> None:
        self.http.close()


def _transport_message(url: str, exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {one_line(exc)} (is `batchvision serve` running?)"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server at {url} did not answer in time ({type(exc).__name__})"
    return f"request to {url} failed: {one_line(exc)}"


@contextlib.contextmanager
def _session(url: str, api_key: str | None) -> Iterator[JobsClient]:
    """A client whose failures (server errors, no connection, local I/O) end the command with
    one `error: ...` line on stderr and the exit status of the table."""
    with reported():
        client = JobsClient(url, api_key)
        try:
            yield client
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(_transport_message(url, exc), ExitStatus.IO) from None
        finally:
            client.close()


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _show(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(job)
    else:
        typer.echo("\n".join(_details(job)))


# --- describing jobs --------------------------------------------------------------------------


def _done(job: dict[str, Any]) -> int:
    """Lines that need no more work: failed lines count, since they are in the results too."""
    progress = job.get("progress") or {}
    return int(progress.get("completed") or 0) + int(progress.get("failed") or 0)


def _total(job: dict[str, Any]) -> int:
    return int((job.get("progress") or {}).get("total") or 0)


def _summary(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    failed = int(progress.get("failed") or 0)
    return f"{job['id']}  {job['status']:<10} {_done(job)}/{_total(job)} lines, {failed} failed"


def _details(job: dict[str, Any]) -> list[str]:
    lines = [_summary(job)]
    for field in ("created_at", "completed_at", "expires_at"):
        if job.get(field):
            lines.append(f"  {field}: {job[field]}")
    if job.get("outputs"):
        lines.append(f"  result files: {len(job['outputs'])}")
    if job.get("error"):
        lines.append(f"  error: {job['error']['code']}: {job['error']['message']}")
    return lines


def _exit_for(job: dict[str, Any]) -> None:
    """Scripts chain on the exit status: only a completed job is a success."""
    if job["status"] != "completed":
        raise typer.Exit(ExitStatus.FAILED)


# --- submit -----------------------------------------------------------------------------------


def _part_blocks(file: IO[bytes], length: int) -> Iterator[bytes]:
    """`length` bytes from the file's current position, a block at a time."""
    left = length
    while left > 0:
        block = file.read(min(BLOCK, left))
        if not block:
            raise CliError("the file got shorter while it was being uploaded")
        left -= len(block)
        yield block


def _part_count(size: int, part_bytes: int) -> int:
    # An empty file still sends one (empty) part, so the server judges it (`empty_batch`).
    count = max(1, math.ceil(size / part_bytes))
    if count > MAX_PARTS:
        raise CliError(f"the file needs {count} parts (at most {MAX_PARTS}); raise --part-size")
    return count


def _upload_parts(
    client: JobsClient, path: Path, route: str, upload_id: str, part_bytes: int
) -> list[dict[str, Any]]:
    """Send the file part by part (parts are streamed too, with their exact Content-Length, so
    the server can refuse an oversized part before reading it)."""
    size = path.stat().st_size
    count = _part_count(size, part_bytes)
    parts = []
    with path.open("rb") as file:
        for number in range(1, count + 1):
            length = min(part_bytes, size - (number - 1) * part_bytes)
            reply = client.call(
                "PUT",
                f"{route}/parts/{number}",
                params={"uploadId": upload_id},
                content=_part_blocks(file, length),
                headers={"Content-Length": str(length)},
            )
            parts.append({"partNumber": number, "etag": reply["etag"]})
    return parts


def _submit_file(
    client: JobsClient, path: Path, part_bytes: int, options: dict[str, Any]
) -> dict[str, Any]:
    upload = client.call("POST", "/v1/uploads")
    route = f"/v1/uploads/{quote(upload['fileId'], safe='')}"
    try:
        parts = _upload_parts(client, path, route, upload["uploadId"], part_bytes)
        noun = "part" if len(parts) == 1 else "parts"
        typer.echo(
            f"uploaded {path.name}: {path.stat().st_size} bytes in {len(parts)} {noun}", err=True
        )
        return client.call(
            "POST",
            f"{route}/complete",
            params={"uploadId": upload["uploadId"]},
            json={"parts": parts, **options},
        )
    except BaseException:
        _abort(client, route, upload["uploadId"])
        raise


def _abort(client: JobsClient, route: str, upload_id: str) -> None:
    """Best effort: free the parts already stored on the server (it would also expire them).
    A refused --callback-url, say, fails only at completion, after every part went up."""
    with contextlib.suppress(httpx.HTTPError):
        client.http.delete(route, params={"uploadId": upload_id}, timeout=10.0)


def _wait(client: JobsClient, job: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Poll until the job ends, with a progress bar on stderr (stdout stays for results)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(job["status"], total=_total(job) or None, completed=_done(job))
        while job["status"] not in FINAL_STATES:
            time.sleep(poll_s)
            job = client.job(job["id"])
            bar.update(task, description=job["status"], total=_total(job) or None)
            bar.update(task, completed=_done(job))
    return job


@app.command("submit")
def submit(
    file: Annotated[
        Path, typer.Argument(help="JSONL file, one request per line", exists=True, dir_okay=False)
    ],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the job until it ends")] = False,
    part_size: Annotated[
        float, typer.Option("--part-size", min=0.001, help="upload part size in MB (2**20 bytes)")
    ] = 50.0,
    poll_s: Annotated[
        float, typer.Option("--poll-s", min=0.05, help="seconds between polls")
    ] = 2.0,
    callback_url: Annotated[
        str | None, typer.Option("--callback-url", help="POSTed to when the job ends")
    ] = None,
    retention_days: Annotated[
        int | None, typer.Option("--retention-days", min=1, help="days to keep the results")
    ] = None,
    as_json: AsJson = False,
) -> None:
    """Upload a JSONL file in parts and start a job; print its id. With --wait, show progress
    and exit 0 only if the job completes (1 if it failed, was cancelled or expired)."""
    options = {"callback_url": callback_url, "retention_days": retention_days}
    options = {k: v for k, v in options.items() if v is not None}
    with _session(url, api_key) as client:
        job = _submit_file(client, file, max(1, int(part_size * MIB)), options)
        if job.get("callback_secret"):
            typer.echo(f"callback secret (shown once): {job['callback_secret']}", err=True)
        if not wait:
            if as_json:
                _emit_json(job)
            else:
                typer.echo(job["id"])
            return
        typer.echo(f"job {job['id']}", err=True)
        job = _wait_or_detach(client, job, poll_s)
    _show(job, as_json)
    _exit_for(job)


def _wait_or_detach(client: JobsClient, job: dict[str, Any], poll_s: float) -> dict[str, Any]:
    """Ctrl-C stops the waiting, not the job: say how to find it again."""
    try:
        return _wait(client, job, poll_s)
    except KeyboardInterrupt:
        typer.echo(
            f"stopped waiting; the job goes on: batchvision jobs status {job['id']}", err=True
        )
        raise typer.Exit(130) from None  # 128 + SIGINT, as the shell reports Ctrl-C


# --- status, list, cancel ---------------------------------------------------------------------


@app.command("status")
def status(
    job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show one job: state, progress, result files and error."""
    with _session(url, api_key) as client:
        job = client.job(job_id)
    _show(job, as_json)


def _all_pages(client: JobsClient, limit: int | None, follow: bool) -> tuple[list[Any], bool]:
    """Jobs newest first; every page when `follow`, else one. Also whether more remain."""
    jobs: list[Any] = []
    cursor = None
    while True:
        page = client.page(limit, cursor)
        jobs.extend(page.get("jobs") or [])
        cursor = page.get("next_cursor")
        if not cursor or not follow:
            return jobs, bool(cursor)


@app.command("list")
def list_jobs(
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=100, help="jobs per page (server default 50)"),
    ] = None,
    follow: Annotated[bool, typer.Option("--all", help="follow every page")] = False,
    as_json: AsJson = False,
) -> None:
    """List your jobs, newest first."""
    with _session(url, api_key) as client:
        jobs, more = _all_pages(client, limit, follow)
    if as_json:
        _emit_json({"jobs": jobs, "has_more": more})
        return
    for job in jobs:
        typer.echo(f"{_summary(job)}  {job.get('created_at') or ''}")
    if more:
        typer.echo("more jobs on the server: add --all (or raise --limit)", err=True)


@app.command("cancel")
def cancel(
    job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Ask the server to stop a job; lines already done keep their results. A job that has
    already ended stays as it was."""
    with _session(url, api_key) as client:
        job = client.cancel(job_id)
    _show(job, as_json)


# --- download ---------------------------------------------------------------------------------


def _download(http: httpx.Client, url: str, target: Path) -> None:
    """Stream one result file into place; a partial file never takes the final name."""
    with http.stream("GET", url) as reply:
        if reply.is_error:
            reply.read()
            raise _api_error(reply)
        with AtomicFile(target) as out:
            for block in reply.iter_bytes(BLOCK):
                out.write(block)


@app.command("download")
def download(
    job_id: JobId,
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="directory for the result files")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Download an ended job's result files as DIR/results_<index>.jsonl."""
    with _session(url, api_key) as client:
        job = client.job(job_id)
        if job["status"] not in FINAL_STATES:
            raise CliError(f"job {job_id} is still {job['status']}; download once it has ended")
        outputs = sorted(job.get("outputs") or [], key=lambda o: int(o["index"]))
        if not outputs:
            raise CliError(f"job {job_id} ({job['status']}) has no result files")
        out_dir.mkdir(parents=True, exist_ok=True)
        # The links are signed: they carry their own credential, so the key is not sent along.
        with httpx.Client(timeout=TIMEOUT) as plain:
            for output in outputs:
                target = out_dir / f"results_{int(output['index'])}.jsonl"
                _download(plain, output["url"], target)
                typer.echo(str(target))
