"""The nginx configuration of torchlab, rendered for a set of replicas.

``torchlab.conf.template`` beside this file is the configuration; this module fills in its
variables from the replicas' limits (``TORCHLAB_*``, read as the service reads them), as
the nginx image's envsubst does under Docker Compose, and repeats the ``NGINX_UPSTREAM``
line once per replica. ``--standalone DIR`` also writes a whole ``nginx.conf`` that keeps
everything nginx writes under ``DIR``, so that nginx runs without the system's
configuration::

    python -m deploy.nginx.render --upstream 127.0.0.1:8001 --upstream 127.0.0.1:8002 \\
        --listen 127.0.0.1:8080 --standalone build/nginx
    nginx -p build/nginx -c nginx.conf -g 'daemon off;'
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from service.config import Limits

TEMPLATE = Path(__file__).with_name("torchlab.conf.template")
UPSTREAM = "NGINX_UPSTREAM"
PROXY_MARGIN_S = 5
"""How far nginx's read and send timeouts lie past the longest a replica may think before
answering (its queue timeout and its request time limit)."""

_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")


def template_values(limits: Limits, *, listen: str, access_log: str) -> dict[str, str]:
    """The template's variables (all but ``NGINX_UPSTREAM``) for replicas with ``limits``."""
    return {
        "NGINX_LISTEN": listen,
        "NGINX_MAX_BODY_BYTES": str(limits.max_body_bytes),
        "NGINX_PROXY_TIMEOUT_S": str(proxy_timeout_s(limits)),
        "NGINX_REQUEST_TIMEOUT_S": str(math.ceil(limits.request_timeout_s)),
        "NGINX_ACCESS_LOG": access_log,
    }


def proxy_timeout_s(limits: Limits) -> int:
    """nginx's read and send timeouts: a little above the longest a replica thinks."""
    return math.ceil(limits.queue_timeout_s + limits.request_timeout_s) + PROXY_MARGIN_S


def template_variables(template: str | None = None) -> set[str]:
    """Every ``${NAME}`` the template uses."""
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    return set(_VARIABLE.findall(text))


def render(upstreams: Sequence[str], values: Mapping[str, str], template: str | None = None) -> str:
    """The template with its variables replaced, the ``NGINX_UPSTREAM`` line once per
    replica (``host:port``). Raises ``KeyError`` naming a variable without a value."""
    if not upstreams:
        raise ValueError("at least one upstream (host:port) is needed")
    text = TEMPLATE.read_text(encoding="utf-8") if template is None else template
    marker = f"${{{UPSTREAM}}}"
    lines: list[str] = []
    for line in text.splitlines(keepends=True):
        if marker in line:
            lines.extend(line.replace(marker, upstream) for upstream in upstreams)
        else:
            lines.append(line)
    missing = template_variables(text) - {UPSTREAM} - set(values)
    if missing:
        raise KeyError(f"no value for {', '.join(sorted(missing))}")
    return _VARIABLE.sub(lambda match: values[match.group(1)], "".join(lines))


def standalone_config(conf: Path, prefix: Path, *, worker_processes: int = 1) -> str:
    """A whole ``nginx.conf`` that includes ``conf`` and writes everything (pid, error log,
    temporary files) under ``prefix``."""
    # As root, nginx's workers would run as "nobody", who may not enter a private prefix.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}worker_processes {worker_processes};\n"
        f"pid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    client_body_temp_path {prefix / 'client_body'};\n"
        f"    proxy_temp_path {prefix / 'proxy'};\n"
        f"    fastcgi_temp_path {prefix / 'fastcgi'};\n"
        f"    uwsgi_temp_path {prefix / 'uwsgi'};\n"
        f"    scgi_temp_path {prefix / 'scgi'};\n"
        f"    include {conf};\n"
        "}\n"
    )


def write_standalone(
    prefix: Path,
    upstreams: Sequence[str],
    limits: Limits,
    *,
    listen: str,
    overrides: Mapping[str, str] | None = None,
) -> Path:
    """Write ``prefix/torchlab.conf`` and ``prefix/nginx.conf`` (access log
    ``prefix/access.log``); return the path of ``nginx.conf``. ``overrides`` replace
    variables that follow from ``limits``."""
    prefix = prefix.resolve()
    prefix.mkdir(parents=True, exist_ok=True)
    values = template_values(limits, listen=listen, access_log=str(prefix / "access.log"))
    values.update(overrides or {})
    conf = prefix / "torchlab.conf"
    conf.write_text(render(upstreams, values), encoding="utf-8")
    main = prefix / "nginx.conf"
    main.write_text(standalone_config(conf, prefix), encoding="utf-8")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--upstream", action="append", required=True, help="a replica, host:port (repeat)"
    )
    parser.add_argument("--listen", default="8080", help="port or address:port (default 8080)")
    parser.add_argument(
        "--access-log", default="/var/log/nginx/torchlab.access.log", help="access log path"
    )
    parser.add_argument(
        "--standalone", metavar="DIR", type=Path, help="write DIR/nginx.conf and DIR/torchlab.conf"
    )
    args = parser.parse_args(argv)
    limits = Limits()  # the replicas' TORCHLAB_* environment, as the service reads it
    if args.standalone is not None:
        path = write_standalone(args.standalone, args.upstream, limits, listen=args.listen)
        print(f"nginx -p {path.parent} -c {path.name} -g 'daemon off;'")
        return 0
    values = template_values(limits, listen=args.listen, access_log=args.access_log)
    sys.stdout.write(render(args.upstream, values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
