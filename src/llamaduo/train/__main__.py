"""`python -m llamaduo.train ARGS` is `llamaduo train ARGS`; it is what `accelerate launch -m` runs in each process."""

import sys

from llamaduo.cli.app import main

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "train", *sys.argv[1:]]
    main()
