from overlayctl.cli import main

main()
