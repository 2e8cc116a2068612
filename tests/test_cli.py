"""The console command: every command is listed."""
from mmdrfuse.cli import main


def test_cli_without_command_lists_every_command(capsys):
    assert main([]) == 2
    listed = capsys.readouterr().out
    for command in ("prepare", "validate", "fuse", "train", "evaluate", "bench", "export", "detect", "pipeline", "demo"):
        assert f"    {command} " in listed or f"    {command}\n" in listed, command
