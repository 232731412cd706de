"""Deployment: export a trained model, serve it over an OpenAI-compatible API, and put a gateway in front of the app."""
