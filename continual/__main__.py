from continual.cli import main

main()
