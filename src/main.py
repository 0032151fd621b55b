"""Entry point: `python src/main.py defense=fast_preemption attack=autoattack` (any Hydra override works)."""

from preempt.commands.evaluate import main

if __name__ == "__main__":
    main()
