"""`batchvision jobs`: submit, watch, list, download and cancel batch jobs on a running server.

The commands are the public Python client (`batchvision.client`) with a command line on top, so
they work against any batchvision server, local or remote, and need none of the server's models
or database. Files go up through the multipart routes one part at a time, and result files come
down in blocks, so neither direction ever holds a whole file in memory.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from batchvision.cli.exits import CliError, ExitStatus, one_line, reported
from batchvision.client import BatchVisionAPIError, BatchVisionClientError, Client, Job
from batchvision.client.wire import API_KEY_ENV, DEFAULT_URL, MIB, part_count

app = typer.Typer(
    help="Batch jobs on a running server: submit, status, list, download, cancel.",
    no_args_is_help=True,
)

Url = Annotated[
    str, typer.Option("--url", envvar="BATCHVISION_URL", help="server base URL", show_default=True)
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar=API_KEY_ENV,
        help="API key, sent as 'Authorization: Bearer <key>'",
        show_default=False,
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="print the server's JSON")]
JobId = Annotated[str, typer.Argument(help="job id")]


def _transport_message(url: str, exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {url}: {one_line(exc)} (is `batchvision serve` running?)"
    if isinstance(exc, httpx.TimeoutException):
        return f"the server at {url} did not answer in time ({type(exc).__name__})"
    return f"request to {url} failed: {one_line(exc)}"


@contextlib.contextmanager
def _session(url: str, api_key: str | None) -> Iterator[Client]:
    """A client whose failures (server errors, no connection, local I/O) end the command with
    one `error: ...` line on stderr and the exit status of the table."""
    with reported():
        client = Client(url, api_key)
        try:
            yield client
        except BatchVisionAPIError as exc:
            # The server speaks the same ErrorCode vocabulary the exit-status table maps.
            raise CliError.of_code(exc.code, exc.message) from None
        except BatchVisionClientError as exc:
            raise CliError(exc.message) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(_transport_message(url, exc), ExitStatus.IO) from None
        finally:
            client.close()


def _emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


def _show(job: Job, as_json: bool) -> None:
    if as_json:
        _emit_json(job.raw)
    else:
        typer.echo("\n".join(_details(job)))


# --- describing jobs --------------------------------------------------------------------------


def _summary(job: Job) -> str:
    done, total, failed = job.progress.done, job.progress.total, job.progress.failed
    return f"{job.id}  {job.status:<10} {done}/{total} lines, {failed} failed"


def _details(job: Job) -> list[str]:
    lines = [_summary(job)]
    for field in ("created_at", "completed_at", "expires_at"):
        if getattr(job, field):
            lines.append(f"  {field}: {getattr(job, field)}")
    if job.outputs:
        lines.append(f"  result files: {len(job.outputs)}")
    if job.error:
        lines.append(f"  error: {job.error.code}: {job.error.message}")
    return lines


def _exit_for(job: Job) -> None:
    """Scripts chain on the exit status: only a completed job is a success."""
    if job.status != "completed":
        raise typer.Exit(ExitStatus.FAILED)


# --- submit -----------------------------------------------------------------------------------


def _submit_file(client: Client, path: Path, part_bytes: int, options: dict[str, Any]) -> Job:
    """Upload in parts, with a progress bar in bytes on stderr (plain lines when stderr is not
    a terminal); a failed upload frees the parts already sent."""
    job = client.jobs.submit(path, part_bytes=part_bytes, progress=True, **options)
    parts = part_count(path.stat().st_size, part_bytes)
    noun = "part" if parts == 1 else "parts"
    typer.echo(f"uploaded {path.name}: {path.stat().st_size} bytes in {parts} {noun}", err=True)
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
    with _session(url, api_key) as client:
        job = _submit_file(client, file, max(1, int(part_size * MIB)), options)
        if job.callback_secret:
            typer.echo(f"callback secret (shown once): {job.callback_secret}", err=True)
        if not wait:
            if as_json:
                _emit_json(job.raw)
            else:
                typer.echo(job.id)
            return
        typer.echo(f"job {job.id}", err=True)
        job = _wait_or_detach(client, job, poll_s)
    _show(job, as_json)
    _exit_for(job)


def _wait_or_detach(client: Client, job: Job, poll_s: float) -> Job:
    """Poll with a progress bar on stderr (stdout stays for results). Ctrl-C stops the
    waiting, not the job: say how to find it again."""
    try:
        return client.jobs.wait(job, poll_s=poll_s, progress=True)
    except KeyboardInterrupt:
        typer.echo(f"stopped waiting; the job goes on: batchvision jobs status {job.id}", err=True)
        raise typer.Exit(130) from None  # 128 + SIGINT, as the shell reports Ctrl-C


# --- status, list, cancel ---------------------------------------------------------------------


@app.command("status")
def status(
    job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Show one job: state, progress, result files and error."""
    with _session(url, api_key) as client:
        job = client.jobs.status(job_id)
    _show(job, as_json)


def _all_pages(client: Client, limit: int | None, follow: bool) -> tuple[list[Job], bool]:
    """Jobs newest first; every page when `follow`, else one. Also whether more remain."""
    jobs: list[Job] = []
    cursor = None
    while True:
        page = client.jobs.list(limit, cursor)
        jobs.extend(page.jobs)
        cursor = page.next_cursor
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
        _emit_json({"jobs": [job.raw for job in jobs], "has_more": more})
        return
    for job in jobs:
        typer.echo(f"{_summary(job)}  {job.created_at or ''}")
    if more:
        typer.echo("more jobs on the server: add --all (or raise --limit)", err=True)


@app.command("cancel")
def cancel(
    job_id: JobId, url: Url = DEFAULT_URL, api_key: ApiKey = None, as_json: AsJson = False
) -> None:
    """Ask the server to stop a job; lines already done keep their results. A job that has
    already ended stays as it was."""
    with _session(url, api_key) as client:
        job = client.jobs.cancel(job_id)
    _show(job, as_json)


# --- download ---------------------------------------------------------------------------------


@app.command("download")
def download(
    job_id: JobId,
    out_dir: Annotated[Path, typer.Option("-o", "--out", help="directory for the result files")],
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Download an ended job's result files as DIR/results_<index>.jsonl (each streamed to
    disk; a partial file never takes the final name)."""
    with _session(url, api_key) as client:
        for path in client.jobs.download(job_id, out_dir):
            typer.echo(str(path))
