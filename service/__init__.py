"""HTTP and process edges: app factory, routers, schemas, auth, errors, metrics, CLI, client."""
