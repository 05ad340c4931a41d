"""`editgraph serve`: an HTTP API with a persistent job queue, live events, and a web page.

The server adds no execution logic of its own: jobs run through the project's Executor with one
shared Cache, so planning, caching and provenance are exactly those of `editgraph run`.
"""
