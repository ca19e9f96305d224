"""`spectro serve`: an HTTP API and a web page for emotion recognition, on FastAPI and uvicorn (the `serve` extra).

- ``app``: the application (``create_app(predictor, settings)``), its endpoints and the page;
- ``model``: an upload's way through the model, as `Predictor` takes a file, behind the micro-batcher;
- ``batcher``: concurrent requests' windows scored in one forward pass, and the admission bound;
- ``guard``: the body limit and the last catch of unexpected errors;
- ``describe``: the model card of ``GET /v1/model``;
- ``static/``: the page's HTML, CSS and JavaScript, shipped in the package.
"""
