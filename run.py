"""Find prompts that make one neuron fire: the command line (cli/main.py; also the `neuron-search` command).

    python run.py --neuron 840                      # GPT-2 small, layer 9 (search, the default command)
    python run.py --neuron 840 --model embedded     # offline, on the bundled model
    python run.py --resume RUN_ID                   # continue a stopped run
    python run.py --list                            # past runs (or: run.py list)
    python run.py report RUN_ID                     # rebuild a run's report.html
    python run.py exemplars --neuron 840            # the neuron's top snippets of real text
    python run.py explain RUN_ID                    # explain a finished run's neuron, and score that
    python run.py sweep --layer 9 --neurons 0:64    # search many neurons of a layer, on Ray
    python run.py search --help                     # every search option, by section
"""

import sys

from neuron_search.cli.main import main  # first: it loads .env before LangSmith reads its settings

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
