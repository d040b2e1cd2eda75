"""The one error type of `stedq export`: its message names the file or option and what is wrong."""


class ExportError(RuntimeError):
    pass
