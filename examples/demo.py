"""Play an overconfident analyzer against the service and print what calibration changed.

python examples/demo.py                         # an in-process service on a temp SQLite
python examples/demo.py --url http://127.0.0.1:8000 [--api-key KEY]
"""

import argparse
import sys

from app.demo import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; default: start one in-process")
    parser.add_argument("--api-key")
    args = parser.parse_args()
    sys.exit(main(args.url, args.api_key))
