"""``ports batch``: run detect / segment / transcribe over many inputs, in one process (``local``)
or on a Ray cluster (``ray``, ``audio-ports[scale]``). See ``runner`` for the job and resume
rules, ``ray_engine`` for the Ray Data facts it relies on."""
