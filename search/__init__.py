"""Search API for backend services: similar products by image, vector or product id."""
