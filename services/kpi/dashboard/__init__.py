"""`GET /dashboard`: a static page over the same JSON API."""
