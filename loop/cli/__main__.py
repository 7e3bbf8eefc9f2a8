from prefloop.loop.cli import main

if __name__ == "__main__":  # not when a spawned child imports the main module
    main()
