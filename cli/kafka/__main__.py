"""Manual use: python -m cli.kafka {fetch,start,stop,status} --data-dir var; and
python -m cli.kafka certs --dir DIR --host NAME (a CA and broker certificates)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.kafka.config import BrokerConfig, BrokerError
from cli.kafka.jars import fetch_jars
from cli.kafka.process import start, status, stop
from cli.kafka.tls import make_tls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cli.kafka", description="Single-node Kafka broker for dev/tests"
    )
    parser.add_argument("command", choices=["fetch", "start", "stop", "status", "certs"])
    parser.add_argument("--dir", type=Path, default=None, help="certs: where to write them")
    parser.add_argument("--host", action="append", default=[], help="certs: a broker's name")
    parser.add_argument("--data-dir", type=Path, default=Path("var"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--controller-port", type=int, default=9093)
    parser.add_argument("--version", default="4.1.2")
    parser.add_argument("--heap-mb", type=int, default=512)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=None)
    args = parser.parse_args(argv)
    cfg = BrokerConfig(
        data_dir=args.data_dir,
        port=args.port,
        controller_port=args.controller_port,
        version=args.version,
        heap_mb=args.heap_mb,
        cache_dir=args.cache_dir,
    )
    try:
        if args.command == "certs":
            files = make_tls(args.dir or args.data_dir / "kafka-tls", args.host)
            print(f"CA {files.ca_cert}; keystore {files.keystore}; truststore {files.truststore}")
            print(f"store password in {files.dir / 'store-password'}")
        elif args.command == "fetch":
            print(fetch_jars(cfg))
        elif args.command == "start":
            pid = start(cfg, timeout=args.timeout or 120.0)
            print(f"Kafka {cfg.version} running: pid {pid}, bootstrap {cfg.bootstrap_servers}")
        elif args.command == "stop":
            stopped = stop(cfg, timeout=args.timeout or 60.0)
            print("stopped" if stopped else "not running")
        else:
            st = status(cfg)
            state = "running" if st.running else "not running"
            print(f"{state} pid={st.pid} port_open={st.port_open} bootstrap={st.bootstrap_servers}")
            return 0 if st.running else 3
    except BrokerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
