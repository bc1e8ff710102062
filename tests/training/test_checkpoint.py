from cellstate.training.checkpoint import continue_backends


def test_a_resume_on_another_device_or_backend_says_so(capsys):
    assert continue_backends(["cpu"], "cpu", "device") == ["cpu"]
    assert capsys.readouterr().err == ""
    assert continue_backends(["cpu"], "cuda", "device") == ["cpu", "cuda"]
    err = capsys.readouterr().err
    assert "resuming on the cuda device, but the checkpoint's steps ran on cpu" in err
    assert continue_backends([], "reference") == ["reference"]  # a fresh run: nothing to say
    assert continue_backends(["cpu"], "reference") == ["cpu", "reference"]
    assert "resuming on the reference backend" in capsys.readouterr().err
