"""Query planning helpers: payload filters compiled to SQL, and coalescing of concurrent single queries."""
