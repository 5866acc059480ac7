from lora_syncer.cli import main

raise SystemExit(main())
