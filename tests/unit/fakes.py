"""The AnsibleModule stand-in the module unit tests share: fail_json raises, warn records."""


class Failed(Exception):
    """What fail_json raised: str() is the message, .kwargs everything the module passed."""

    def __init__(self, kwargs):
        Exception.__init__(self, kwargs['msg'])
        self.kwargs = kwargs


class FakeModule(object):
    def __init__(self, params=None, check_mode=False, diff=False):
        self.params = {} if params is None else params
        self.check_mode = check_mode
        self._diff = diff
        self.warnings = []

    def fail_json(self, **kwargs):
        raise Failed(kwargs)

    def warn(self, msg):
        self.warnings.append(msg)
