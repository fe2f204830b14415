from dynamail.cli.main import main

main()
