"""Tests of the service-LLM layer, against the fake provider server."""
