#!/usr/bin/env bash
# docker-compose.yml's production profile: the SCRAM users and the ACLs of docs/kafka.md,
# created over the broker's INTERNAL listener (mTLS as CN=broker, a super user).
set -euo pipefail
cat > /tmp/admin.properties <<PROPS
security.protocol=SSL
ssl.keystore.type=PKCS12
ssl.keystore.location=/etc/kafka/tls/broker.p12
ssl.keystore.password=${KAFKA_TLS_STORE_PASSWORD}
ssl.key.password=${KAFKA_TLS_STORE_PASSWORD}
ssl.truststore.type=PKCS12
ssl.truststore.location=/etc/kafka/tls/truststore.p12
ssl.truststore.password=${KAFKA_TLS_STORE_PASSWORD}
PROPS
KAFKA=kafka-secure:9095
bin=/opt/kafka/bin
for user in intake qualifier kpi; do
  var="KAFKA_${user^^}_PASSWORD"
  "$bin/kafka-configs.sh" --bootstrap-server "$KAFKA" --command-config /tmp/admin.properties \
    --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[password=${!var}]" >/dev/null
done
acl() { "$bin/kafka-acls.sh" --bootstrap-server "$KAFKA" --command-config /tmp/admin.properties --add "$@" >/dev/null; }
for user in intake qualifier kpi; do
  acl --allow-principal "User:$user" --operation Describe --operation DescribeConfigs \
    --topic leads. --resource-pattern-type prefixed
done
acl --allow-principal User:intake --operation Write --topic leads.received
acl --allow-principal User:intake --operation Write --topic leads.lifecycle
acl --allow-principal User:qualifier --operation Read --group leadflow-qualifier
acl --allow-principal User:qualifier --operation Read --topic leads.received
acl --allow-principal User:qualifier --operation Read --operation Write --topic leads.lifecycle
acl --allow-principal User:qualifier --operation Write --topic leads.routed
acl --allow-principal User:qualifier --operation Write --topic leads.deadletter
acl --allow-principal User:kpi --operation Read --group leadflow-kpi
acl --allow-principal User:kpi --operation Read --group leadflow-kpi-rebuild- --resource-pattern-type prefixed
acl --allow-principal User:kpi --operation Read --topic leads.received
acl --allow-principal User:kpi --operation Read --topic leads.routed
acl --allow-principal User:kpi --operation Read --topic leads.lifecycle
acl --allow-principal User:kpi --operation Write --topic leads.deadletter
# The topics, replication 1 on this one broker (a real cluster: 3 and min.insync 2).
for topic in leads.received leads.routed leads.lifecycle leads.deadletter; do
  "$bin/kafka-topics.sh" --bootstrap-server "$KAFKA" --command-config /tmp/admin.properties \
    --create --if-not-exists --topic "$topic" --partitions 6 --replication-factor 1 \
    --config retention.ms=-1 --config retention.bytes=-1 --config min.insync.replicas=1
done
echo "kafka-secure: users, ACLs and topics ready"
