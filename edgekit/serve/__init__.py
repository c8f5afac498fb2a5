"""Serving: workers on the nodes, the router, the Open Inference Protocol API and the client."""
