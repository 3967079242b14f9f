"""The client commands of the `chainrule` CLI: one module per resource (datasets, jobs), each a typer
app over chainrule.client.Client. A new resource (e.g. sweeps) is a module here and one
`app.add_typer` line in chainrule/cli.py."""
