from nightowl.cli import main

main()
