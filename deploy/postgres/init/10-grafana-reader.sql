-- A read-only role for Grafana's business panels (deploy/compose.yaml mounts this directory
-- as the postgres image's /docker-entrypoint-initdb.d, run once on an empty data directory).
-- The password matches GRAFANA_PG_PASSWORD in compose.yaml: a laptop's, never production's.
CREATE ROLE tailpipe_reader LOGIN PASSWORD 'grafana-reader';
GRANT CONNECT ON DATABASE tailpipe TO tailpipe_reader;
GRANT USAGE ON SCHEMA public TO tailpipe_reader;
-- The tables do not exist yet (`tailpipe migrate` creates them): grant what tailpipe creates.
ALTER DEFAULT PRIVILEGES FOR ROLE tailpipe IN SCHEMA public GRANT SELECT ON TABLES TO tailpipe_reader;
