from llamaduo.cli.app import main
__all__ = ["main"]
