"""chainrule: the composition root — the `chainrule` CLI, the supervisor of `serve`, the HTTP server; the only package that imports both api/ and worker/."""
