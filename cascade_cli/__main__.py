from cascade_cli.cli import main

main()
