"""The command line (`run.py`, the `neuron-search` console command): cli/main.py picks the subcommand
and parses its options, cli/options.py turns context.py's settings into grouped options, and each
command's module calls the services that do the work."""
