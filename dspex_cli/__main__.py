from dspex_cli.main import main

raise SystemExit(main())
