"""The HTTP service for live sessions (``nextclick serve``), one concept per module:

* :mod:`.settings` -- :class:`Settings`, where every limit of a request is defined;
* :mod:`.schemas` -- the request and response bodies (pydantic), built from the settings;
* :mod:`.service` -- the service logic as plain functions: append a click, recommend for a
  session or for a list of clicks, delete a session, reload the model;
* :mod:`.app` -- :func:`create_app`, the FastAPI factory wiring routes to that logic;
* :mod:`.middleware` -- the guard in front of FastAPI: body limit, metrics, the fast click path;
* :mod:`.metrics` -- the Prometheus metrics;
* :mod:`.store` -- the session stores (in-process, Redis);
* :mod:`.artifacts` -- loading a model artifact for serving;
* :mod:`.jobs` -- what the model computes per request (model step, top-k, popularity);
* :mod:`.worker` -- the model-worker interface and the thread worker;
* :mod:`.process` -- the model process and its handle (the default worker);
* :mod:`.wire` -- the bytes between the service and the model process.

Nothing here is imported by the rest of the package.
"""
