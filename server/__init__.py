"""What the web server puts around gradio: the ASGI guard that keeps the server from fetching URLs."""
