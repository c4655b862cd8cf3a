"""Helpers shared by the bench scripts: a uvicorn server in a subprocess, timing, printing.

The scripts are measurements, not tests: they print PASS or MISS against a goal and always
exit 0 (unless something is broken, e.g. the server does not start).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """``uvicorn <app>`` on 127.0.0.1 in a subprocess, started and stopped by ``with``, with
    the settings of ``make serve`` (no uvicorn access log; the service's protocol)."""

    def __init__(
        self,
        app: str = "service.main:app",
        *,
        env: dict[str, str] | None = None,
        startup_timeout_s: float = 120.0,
        cwd: Path = ROOT,
        http: str | None = None,
    ) -> None:
        self.app = app
        self.cwd = cwd
        # The service's protocol, as `make serve` runs it (an older tree's: httptools).
        protocol = "service.protocol:HeadTimedProtocol"
        has_protocol = (cwd / "service" / "protocol.py").exists()
        self.http = http or (protocol if has_protocol else "httptools")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TORCHLAB_LOG_LEVEL": "warning", **(env or {})}
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        # The server's output, for the error message if it fails; closed by __exit__.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            self.app,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            "--no-access-log",  # as `make serve` (the service writes its own)
            "--http",
            self.http,
        ]
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"the server exited early:\n{self.log()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/health").status_code == 200:
                        return self
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"no answer from {self.url}/health in {self.startup_timeout_s} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)

    def log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.close()


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A temporary git worktree of ``commit``, to serve an earlier version beside this tree
    (``Server(cwd=...)``, with this venv); removed on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), commit],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            yield tree
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Wall time of ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarize(times)


def summarize(times: Sequence[float]) -> dict[str, Any]:
    """Median, min, max (seconds) and every sample."""
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "samples_s": list(times),
    }


def verdict(value: float, goal: float, better: str) -> str:
    """``PASS`` if ``value`` meets ``goal`` (``better`` is ``"lower"`` or ``"higher"``)."""
    ok = value <= goal if better == "lower" else value >= goal
    return "PASS" if ok else "MISS"


def goal_text(goal: float, better: str) -> str:
    return f"{'<=' if better == 'lower' else '>='} {goal:g}x"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain fixed-width table; floats get 4 significant digits."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in text:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_ratio(name: str, ratio: float, goal: float, better: str) -> dict[str, Any]:
    """Print ``RATIO name: x (goal ...) PASS|MISS`` and return it as a dict."""
    status = verdict(ratio, goal, better)
    print(f"RATIO {name}: {ratio:.3f}x  (goal {goal_text(goal, better)})  {status}")
    return {"name": name, "ratio": ratio, "goal": goal, "better": better, "status": status}


def round_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """The ratio of each round's pair of samples (taken back to back, so that the machine's
    state is much the same for both): their median, least and greatest. Where these straddle
    a goal, the verdict on the medians is the machine's noise as much as the code's."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def spread_text(spread: dict[str, Any]) -> str:
    """``rounds 1.10x-1.62x, median 1.31x``: :func:`round_ratios` as a line's tail."""
    return f"rounds {spread['min']:.2f}x-{spread['max']:.2f}x, median {spread['median']:.2f}x"


def print_paired_ratio(
    name: str, numerator: dict[str, Any], denominator: dict[str, Any], goal: float, better: str
) -> dict[str, Any]:
    """:func:`print_ratio` of two :func:`summarize` results' medians, followed by the ratios
    of their rounds' pairs (:func:`round_ratios`), which the returned dict has as ``rounds``."""
    entry = print_ratio(name, numerator["median_s"] / denominator["median_s"], goal, better)
    entry["rounds"] = round_ratios(numerator["samples_s"], denominator["samples_s"])
    print(f"  each round's pair: {spread_text(entry['rounds'])}")
    return entry


def base_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--repeats", type=int, default=repeats, help=f"timed repeats (default {repeats})"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    return parser


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    # Imported here: overhead.py forks load-generator processes and never needs torch.
    import torch  # noqa: PLC0415

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def write_json(path: str | None, results: dict[str, Any]) -> None:
    if not path:
        return
    Path(path).write_bytes(
        orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    print(f"wrote {path}")


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n== {title}")
    yield
