"""Local mode: the whole pipeline on 127.0.0.1 (moto server, API, runtimes, agents)."""
