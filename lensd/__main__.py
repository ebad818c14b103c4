from lensd.cli import main

main()
