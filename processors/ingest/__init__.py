"""Edges where provider events enter: the HTTP gateway, pollers and the raw producer."""
