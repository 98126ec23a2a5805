"""Serving a run: `service.RecommendService` (load, resolve, recommend, search) and the HTTP API:
`app` (`create_app`, `serve`), `routes` (the endpoints), `schemas` (their JSON bodies),
`batcher` (`MicroBatcher`) and `guard` (`RequestGuard`, API-key auth)."""
