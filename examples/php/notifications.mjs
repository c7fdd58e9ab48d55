// Scenario 1, the browser's side (Autobahn|JS; the same code runs in Node): log in with the
// token the app minted (examples/php/login.php) and show the user's notifications.
// `autobahn` is Autobahn|JS: the global of its browser build (<script src="autobahn.min.js">),
// or `import autobahn from 'autobahn'` in Node.

export function connectNotifications(autobahn, url, token, onNotification) {
    return new Promise((resolve, reject) => {
        const connection = new autobahn.Connection({
            url,
            realm: 'shop',
            authmethods: ['ticket'],
            onchallenge: () => token,      // the JWT is the ticket; the router reads the authid from it
            max_retries: 0,
        });
        connection.onopen = async (session, details) => {
            const me = details.authid;     // "alice": the token's sub
            try {
                await session.subscribe(`com.shop.user.${me}.notifications`,
                    (args, kwargs) => onNotification(args[0], kwargs));
                resolve({ session, connection });
            } catch (e) {
                reject(e);
            }
        };
        connection.onclose = (reason, details) => {
            reject(new Error(`${reason}: ${details.message ?? ''}`));
            return true;                   // do not retry
        };
        connection.open();
    });
}
