// OAuth 2.0 Form Post Response Mode: send the response to the client at once.
document.forms[0].submit();
