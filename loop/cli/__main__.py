from prefloop.loop.cli import main

main()
