"""Control of a real single-node Apache Kafka (KRaft) broker for dev and tests: fetch, start, stop.

No Docker and no Kafka package are needed: the broker's jars are fetched once from Maven Central
with ``mvn dependency:copy-dependencies`` (``deploy/kafka/pom.xml``) into a cache outside the
repository, and ``java -cp '<libs>/*' kafka.Kafka server.properties`` runs a combined
broker + controller node listening on 127.0.0.1 only.

Everything a broker writes lives under ``<data_dir>/kafka``::

    data/               log.dirs (topic partitions, __cluster_metadata, meta.properties)
    logs/               -Dkafka.logs.dir (unused by the console-only log4j2 config)
    server.properties   rewritten on every start from BrokerConfig
    broker.pid          pid of the running JVM
    broker.log          stdout + stderr of the JVM (the previous run's in broker.log.1)

Stdlib only, so it can be used from tests, the CLI and scripts alike. Linux/POSIX only.
Modules: ``config`` (BrokerConfig, server.properties), ``jars`` (fetch with Maven),
``process`` (start/stop/status), ``ports`` (free ports), ``osutil`` (pids, locks, logs);
``cluster`` (a multi-node SASL_SSL cluster with ACLs: ``leadflow kafka start --brokers 3
--sasl-ssl``), ``tls`` (its CA and certificates), ``acls`` (each service's rights).
Manual use: ``python -m cli.kafka {fetch,start,stop,status} --data-dir var``.
"""
