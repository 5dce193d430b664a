"""The wire boundary: proto to domain (inbound), domain to proto (outbound), errors to
statuses (status). Nothing else in the server converts to or from the proto."""
