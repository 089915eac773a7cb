-- One database per service (CONTRACT.md: each service owns its database).
CREATE DATABASE intake;
CREATE DATABASE qualifier;
CREATE DATABASE kpi;
