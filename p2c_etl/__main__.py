"""`python -m p2c_etl` is `p2c`."""

from p2c_etl.cli.main import main

main()
