"""Serving a run: `service.RecommendService` (load, resolve, recommend, search), and the HTTP
API in `app` (`create_app`, `MicroBatcher`, `serve`)."""
