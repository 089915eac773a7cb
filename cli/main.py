"""The `leadflow` command: run the stack, one service, the dev Kafka broker, or migrations."""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli import postgres_server, stack
from cli.kafka import cluster as kafka_cluster
from cli.kafka import jars as kafka_jars
from cli.kafka import process as kafka_process
from shared.migrations import SERVICES, migrate
from shared.settings import CommonSettings

app = typer.Typer(
    help="Leadflow: intake, qualifier and KPI services on one Kafka stream.", no_args_is_help=True
)
kafka_app = typer.Typer(
    help="The dev Kafka broker (KRaft, one node) under the data dir.", no_args_is_help=True
)
app.add_typer(kafka_app, name="kafka")
postgres_app = typer.Typer(
    help="The embedded PostgreSQL server (Unix socket only) under the data dir.",
    no_args_is_help=True,
)
app.add_typer(postgres_app, name="postgres")


class Service(StrEnum):
    intake = "intake"
    qualifier = "qualifier"
    kpi = "kpi"


@app.command()
def up() -> None:
    """Start PostgreSQL and Kafka, migrate, and run the three services until Ctrl-C (which
    stops all it started)."""
    raise typer.Exit(stack.up(print_fn=typer.echo))


@app.command()
def serve(
    service: Service,
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Run one service in the foreground (its database must be migrated)."""
    import uvicorn

    from shared.malloc import pin_mmap_threshold
    from shared.runtime import freeze_after_start

    settings = stack.service_settings(service.value)
    settings.check_secure()
    freeze_after_start()
    pin_mmap_threshold()
    uvicorn.run(
        f"services.{service.value}.main:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        access_log=access_log,
        log_level=settings.common.log_level.lower(),
        timeout_graceful_shutdown=10,
    )


@app.command("migrate")
def migrate_command(
    service: Annotated[Service | None, typer.Argument(help="One service; all when omitted")] = None,
) -> None:
    """Bring each service's database to the newest schema (Alembic)."""
    for name in [service.value] if service else list(SERVICES):
        url = stack.service_settings(name).db_url
        migrate(name, url)
        typer.echo(f"{name}: migrated")


@app.command()
def topics() -> None:
    """Create the project's topics on the configured Kafka (existing ones are kept)."""
    common = CommonSettings()
    common.check_secure()
    asyncio.run(
        stack.ensure_topics(common.kafka(), common.topic_partitions, durability=common.durability())
    )
    typer.echo("topics ready")


@app.command()
def asyncapi(
    output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None,
) -> None:
    """Print the AsyncAPI document generated from the event schemas."""
    from shared.asyncapi import asyncapi_document

    text = json.dumps(asyncapi_document(), indent=2, ensure_ascii=False) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Fetch the broker jars from Maven Central into the cache (no-op when cached)."""
    cfg = stack.broker_config(CommonSettings())
    typer.echo(f"jars in {kafka_jars.fetch_jars(cfg)}")


@kafka_app.command("start")
def kafka_start(
    brokers: Annotated[int, typer.Option(min=1, max=9, help="KRaft nodes (a cluster if > 1)")] = 1,
    sasl_ssl: Annotated[
        bool, typer.Option("--sasl-ssl", help="SASL_SSL, SCRAM users and ACLs (docs/kafka.md)")
    ] = False,
) -> None:
    """Start the broker in the background; returns once it answers. With --brokers or
    --sasl-ssl: a secured cluster, its topics and ACLs, and a .env file per service."""
    common = CommonSettings()
    if brokers == 1 and not sasl_ssl:
        cfg = stack.broker_config(common)
        pid = kafka_process.start(cfg)
        typer.echo(f"kafka running on {cfg.bootstrap_servers} (pid {pid})")
        return
    port = stack.broker_config(common).port
    secured = kafka_cluster.ClusterConfig.at(common.data_dir, port, brokers)
    pids = kafka_cluster.start(secured)
    asyncio.run(kafka_cluster.configure(secured, common.topic_partitions))
    typer.echo(f"kafka cluster (SASL_SSL) on {secured.bootstrap_servers} (pids {pids})")
    for user, path in kafka_cluster.write_env_files(secured).items():
        typer.echo(f"  {user:<10} settings: {path}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the broker (and the cluster of the data dir, if one was started); returns once
    it is gone."""
    common = CommonSettings()
    secured = kafka_cluster.ClusterConfig.load(common.data_dir)
    if secured is not None and kafka_cluster.stop(secured):
        typer.echo("kafka cluster stopped")
    cfg = stack.broker_config(common)
    typer.echo("kafka stopped" if kafka_process.stop(cfg) else "kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the broker of this data dir runs; exit 1 when it does not."""
    st = kafka_process.status(stack.broker_config(CommonSettings()))
    typer.echo(
        f"running={st.running} pid={st.pid} port_open={st.port_open} "
        f"bootstrap={st.bootstrap_servers} data_dir={st.data_dir}"
    )
    raise typer.Exit(0 if st.running else 1)


def _postgres_config() -> postgres_server.ServerConfig:
    return postgres_server.ServerConfig(data_dir=CommonSettings().data_dir)


@postgres_app.command("start")
def postgres_start() -> None:
    """Start the server in the background (initialised on first use, with the databases
    intake, qualifier and kpi); it runs until `leadflow postgres stop`."""
    cfg = _postgres_config()
    pid = postgres_server.start(cfg)
    typer.echo(f"postgres running (pid {pid}): {cfg.dsn('<database>')}")


@postgres_app.command("stop")
def postgres_stop() -> None:
    """Stop the server (fast shutdown); returns once it is gone."""
    stopped = postgres_server.stop(_postgres_config())
    typer.echo("postgres stopped" if stopped else "postgres was not running")


@postgres_app.command("status")
def postgres_status() -> None:
    """Say whether the server of this data dir runs; exit 1 when it does not."""
    st = postgres_server.status(_postgres_config())
    typer.echo(f"running={st.running} pid={st.pid} socket_dir={st.socket_dir} data={st.data_dir}")
    raise typer.Exit(0 if st.running else 1)
