from sdeks.cli import main

main()
