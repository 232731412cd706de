"""The one exception users see: a problem plus the fix, printed as one line by the CLI."""


class LlamaduoError(Exception):
    """A user-facing failure. The CLI prints `error: <problem> <fix>` and exits with `exit_code`.

    Raise it for anything the user can act on (bad input, missing key, unreachable server).
    Never put secrets in the message.
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem.rstrip(".")
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}. {self.fix}" if self.fix else f"{self.problem}."


class ConfigError(LlamaduoError):
    """The config file or an override is wrong."""


class BudgetExceeded(LlamaduoError):
    """The next paid request would cross `service.budget_usd`; the stage stopped before it."""


class MissingExtra(LlamaduoError):
    """An optional dependency is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(
            f"the Python package `{module}` is not installed",
            f"Install it with `pip install 'llamaduo[{extra}]'`.",
        )
