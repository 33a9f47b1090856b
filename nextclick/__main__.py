from nextclick.cli import main

main()
