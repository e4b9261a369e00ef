"""The API's routers, one module per resource of the RealWorld spec."""
