"""`python -m p2c_etl` is `p2c`."""

from p2c_etl.cli import main

main()
